"""The fault matrix (`make faults`): faults injected into the real local stack, losses and duplicates counted."""
