"""Small composable losses: import them from their modules."""
