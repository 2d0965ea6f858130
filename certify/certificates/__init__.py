"""Certificates as documents (`document`), their construction from the solver and verification layers
(`builder`), and the small independent checker (`checker`), which imports neither."""
