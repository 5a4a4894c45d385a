"""One module per sub-command, named by ``treadle_cli.plugin`` as ``"module:Class"``
references; nothing else imports them."""
