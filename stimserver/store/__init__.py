"""File-based storage: every byte stimserver keeps lives under the data directory."""
