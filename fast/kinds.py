"""Value kinds: the one numbering of a reading's value, shared by every part.

The decoders (fast/decode.pyx and its pure twin) tag each record with one of
these; the column lane's blocks, the journal and the store's `readings.kind`
column hold the same numbers, so a reading's kind is never translated on its
way from a datagram to the database. The numbers are part of the stored
format: changing one needs a migration in hub/store/schema.py.

    NUM  -- SenML "v": a number (float64); also a record that carries only a
            sum ("s"), stored as NUM with no value
    BOOL -- SenML "vb": stored as 0 or 1
    STR  -- SenML "vs": text
    DATA -- SenML "vd": bytes
    SUM  -- decoder only: a record with a sum and no value (stored as NUM)
"""

NUM = 0
BOOL = 1
STR = 2
DATA = 3
SUM = 4

# the SenML label of each kind, indexed by kind
NAMES = ("v", "vb", "vs", "vd", "s")

# kinds a rollup aggregates (numbers; booleans count as 0/1)
NUMERIC = (NUM, BOOL)
