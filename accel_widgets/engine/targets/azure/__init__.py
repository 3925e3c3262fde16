"""Azure: the Resource Manager client, the Azure ML target."""
