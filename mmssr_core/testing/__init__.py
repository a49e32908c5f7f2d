"""Test kit: builders of small pools and probes of other tools' readers. Product modules never import it."""
