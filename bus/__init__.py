"""Trục liên thông văn bản: an exchange bus for edXML envelopes (QCVN 102:2016).

The core: the envelope model and its checks (:mod:`bus.envelope`), organisation identifiers
(:mod:`bus.organ_id`), the hardened XML parser (:mod:`bus.xmlparse`), XML signatures
(:mod:`bus.dsig`), trace headers (:mod:`bus.trace`) and the development PKI (:mod:`bus.pki`).
"""

__version__ = "0.1.0"
