"""Batch certification into a resumable certificate store (issue 17, parts 4 and 5).

`store`: the SQLite store (one certificate per input, method and parameters; export to JSON Lines and Parquet);
`runner`: `certify batch` (tasks of one method on a chunk of inputs, the parent the single writer);
`executors`: the local process pool and Ray; `verify`: `certify verify --store`; `cli`: the commands' parsers.
"""
