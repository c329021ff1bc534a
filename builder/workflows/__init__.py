"""Jobs over recipes and finished outputs: calibrate, reproduce, relabel / retry-failed, review import."""
