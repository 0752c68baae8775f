"""stackd: run a hybrid GPU / CPU / cloud model stack on one AI workstation."""

__version__ = "0.1.0"
