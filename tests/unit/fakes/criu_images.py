"""CRIU image files as CRIU writes them, for the tests that read them."""

# stats-dump written by CRIU 4.1.1 on the test bed (frozen_time 134993 us, 658 pages written);
# `crit decode` printed test_criu.STATS_JSON for it.
STATS_DUMP = bytes.fromhex(
    "4059105506330957250000000a2308940110d19e0818a21220f80a28d305300038920540004800500858086000680070" + "00"
)
