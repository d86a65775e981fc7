"""User-facing tools: file tagging, subscribers, dashboards, the live demo."""
