"""The dialogue with residents. Knows no chat platform: speaks Incoming and Reply."""
