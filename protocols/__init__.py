"""Messages, codecs and wire formats: what crosses a process, a node or a disk."""
