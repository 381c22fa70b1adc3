"""Data set adapters and generators; each produces a CaseTable and a Task."""
