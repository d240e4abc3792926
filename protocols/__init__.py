"""Messages, codecs and wire formats: what crosses a process, a node or a disk.

Importing this package registers the meter core's records with the codec (`protocols.registry`).
"""

from protocols import registry as _registry  # noqa: F401  (registers domain records)
