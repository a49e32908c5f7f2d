"""Test kit: servers, fault injectors and builders that tests and benchmarks use. Product modules never
import this package."""
