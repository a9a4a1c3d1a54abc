"""Devices: commands sent to them over MQTT (commands.py)."""
