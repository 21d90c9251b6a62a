"""After the search: the final model, finalize's stages and table, the exported model."""
