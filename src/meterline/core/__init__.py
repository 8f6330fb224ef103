"""The pure core of meterline: decisions without I/O, clocks or randomness.

Everything here is a deterministic function of its arguments. Time arrives as integers
(microseconds since the Unix epoch, UTC) passed in by the shell; nothing reads a clock,
a file, a socket or a random source. Imports: the standard library and msgspec (used only
as a pure, deterministic encoder and decoder).
"""
