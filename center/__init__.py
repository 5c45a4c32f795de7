"""The community center: receives every node's alerts, dispatches them to grid workers, closes the loop."""
