"""The controller side of running a command: the agent hub, the SSH executor, progress, lost commands, output
redaction and ownership of a command across replicas."""
