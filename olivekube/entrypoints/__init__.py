"""One module per way of running passes: local run, in-Job runner, Azure ML dispatcher, Azure ML job
(and `olivekube watch`). Each wires the lower layers together; the CLI only parses arguments."""
