"""What every layer shares: errors that name a field, labels and constants, the chain and content
keys, the clock, and model artifact references. Depends on nothing else in olivekube."""
