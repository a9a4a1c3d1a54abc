"""JSON documents — user interactions, device logs, AI model outputs — in the registry's
database, filtered, sorted and access-scoped (docs/documents.md)."""
