"""Small pure helpers shared across layers (one definition each): deep merge, Kubernetes
status-condition lookup, field-path formatting. No I/O, no imports from other cloudctl layers."""
