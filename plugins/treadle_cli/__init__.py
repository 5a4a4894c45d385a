"""treadle built-in plugin: the ``treadle`` sub-commands.

``train``, ``verify-resume``, ``export``, ``runs``, ``registry``, ``jobs``, ``worker``,
``schedule`` and ``plugins``, registered through ``treadle_register_commands`` exactly as a
third party's commands are. Each command module imports only light modules at the top and the
engine, torch and storage inside ``run``, so ``treadle --help`` starts without torch.
"""
