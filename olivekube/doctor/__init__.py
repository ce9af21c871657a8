"""`olivekube doctor`: the checks a node must pass to run olivekube's passes, and the tiny model they use."""
