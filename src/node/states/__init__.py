"""One module per lifecycle state: the work its on-enter starts (DESIGN.md §3).

Each module's ``run(ctx, event)`` runs as a task in the daemon's task group for one
visit of the state and is cancelled when the state is left. It posts an event when
its work is done; it never changes the state itself.
"""
