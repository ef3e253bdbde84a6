"""Entry points: the operator CLI and the Lambda handler. Wiring and presentation only."""
