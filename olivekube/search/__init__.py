"""Olive's search, as olivekube will run it: a space of pass options, samplers that draw from it, and
the ranking of measured candidates (Olive's priority order, goals, the Pareto frontier).

Pure and unit-tested alone: nothing here runs a pass. The workflow, the runner and the operator
are not wired to it yet (issue 28): a workflow that searches is still refused.
"""
