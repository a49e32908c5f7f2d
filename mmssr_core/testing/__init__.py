"""Test kit: tiny models, test servers, fault injectors, pool builders and probes of other tools' readers.

Product modules never import it."""
