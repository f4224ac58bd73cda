"""smartpark.protocol: the wire formats (CBOR, SenML, CoAP, link-format).

Written in the subset of Python that MicroPython runs, so the same files are
the node firmware's codecs and the hub's reference implementation.
"""
