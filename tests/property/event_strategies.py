"""Hypothesis strategies for event values a store or billing could mishandle: control
characters, NUL, lone surrogates, numbers past (and just within) the ingest limits, and
nested values."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import strategies as st

UNSTORABLE = ["\x00", "\x01", "\x1f", "\n", "\ud800", "\udfff", "\x7f", "\\u0000", "\u2028"]
"""Characters a store could treat differently: NUL, C0 controls, lone surrogates, DEL, a
backslash spelling NUL, a line separator."""
tricky_texts = st.lists(
    st.one_of(st.text(max_size=3), st.sampled_from(UNSTORABLE)), max_size=4
).map("".join)
tricky_numbers = st.one_of(
    st.sampled_from(
        [
            10**18 - 1,
            10**18,
            -(10**18),
            10**400,
            Decimal("1E+400"),
            Decimal("-1E-400"),
            Decimal("1E-10"),
            Decimal("1E-11"),
            Decimal("0E+30"),
            Decimal("1.0000000000"),
            Decimal("1.00000000000"),
            Decimal("999999999999999999.9999999999"),
            Decimal("1E+18"),
            Decimal("sNaN"),
            1e300,
            5e-324,
        ]
    ),
    st.integers(),
    st.decimals(),
    st.floats(),
)
nested_values = st.recursive(
    st.one_of(tricky_texts, tricky_numbers, st.booleans(), st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(tricky_texts, children, max_size=3)
    ),
    max_leaves=10,
)
