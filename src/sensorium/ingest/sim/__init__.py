"""Internals of the device simulator; the public API is :mod:`sensorium.ingest.simulator`.

* :mod:`.config`: :class:`SimConfig`, :class:`SimSummary`, time constants.
* :mod:`.fleet`: devices, locations, rooms, kinds, fields, units and domains.
* :mod:`.vectors`: vectorised helpers (AR(1) noise, stretches carried over chunks).
* :mod:`.signals`: the per-kind clean signal generators and their carried state.
* :mod:`.faults`: fault injection (value, dropout and line faults) and ground-truth labels.
* :mod:`.engine`: :class:`Simulator` and :class:`SimChunk` (chunked generation, ``write``).
* :mod:`.output`: line protocol / JSONL / CSV / Parquet / label writers.
* :mod:`.http`: :func:`post` (line protocol over HTTP).
"""
