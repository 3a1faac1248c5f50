"""The write path (validate → CAS write → audit) and the control loops."""
