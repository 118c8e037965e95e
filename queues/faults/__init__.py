"""Faults injected into a run: the fault objects the runner drives (``injectors``) and the private
server instances a ``restart-server`` fault may crash (``servers``, ``server_kinds``). Imports
the backends, the workers and below; never the runner (it is handed a ``RunHandle``).
"""
