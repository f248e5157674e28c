"""One thin module per DVC stage: read params, call the library, write outputs, metrics and plots."""
