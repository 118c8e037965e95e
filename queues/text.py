"""Text helpers for messages, a leaf module: it imports nothing of imqueue."""
