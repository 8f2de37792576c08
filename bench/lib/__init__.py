"""Helpers shared by the bench scripts: processes, wrk, /proc readings, machine facts."""
