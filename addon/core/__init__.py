"""Pure logic of the add-on: no bpy here, so it can be unit-tested with plain pytest."""
