"""Theorem checks: one module per theorem of the sources (DESIGN section 6), each stating the theorem
exactly in its docstring, with symbolic checks (SymPy) and property tests (Hypothesis)."""
