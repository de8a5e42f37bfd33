"""Files below both parity and training: formats, validation, atomic writes, train states."""
