"""One thin module per `twinframe` subcommand: parse, call, print."""
