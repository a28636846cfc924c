"""Values a settings file or a flag may hold, for properties of the configurations.

Every TOML type (a date and a table too), numbers that are not finite, and the texts that
tripped the readers once. Shared by the agent's and the collector's configuration tests.
"""

from __future__ import annotations

from hypothesis import strategies as st

TRICKY_TEXTS = ("nan", "-inf", "inf", "1e400", "2.5", "3.1.1", "mqtt://[::1", "p256", "json")

setting_values = st.recursive(
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.datetimes()
    | st.sampled_from(TRICKY_TEXTS),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=4,
)
