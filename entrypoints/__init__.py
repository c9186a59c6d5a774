"""Entrypoints: the only code that builds a store, a broker connection or a publisher.

:mod:`entrypoints.bootstrap` builds them from the settings, with the same options for every command;
:mod:`entrypoints.runtime` is one ``bus serve`` process (the node); ``cli*`` are the ``bus`` commands,
split by who uses them (envelope tools, the service and agencies' clients, operators, the mock axis).
"""
