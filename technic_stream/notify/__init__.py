"""The notifier: fired alerts to their owners' delivery targets, once each."""
