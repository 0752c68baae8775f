"""Stacks that follow the day: windows, holds, idle downshift and wake-on-demand, as a pure policy.

``windows`` computes when windows begin; ``policy`` decides the stack meant to run and why. Both
read no clock and do no I/O; the daemon's driver is ``stackd.manager.day``.
"""
