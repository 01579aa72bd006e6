"""tillflow: keeps store tills, the loyalty platform and the ERP in step, exactly once."""

__version__ = "0.1.0"
