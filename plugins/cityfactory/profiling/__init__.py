"""What sample files say about themselves (dialect, columns, types, time, series; an image folder's
classes and pictures), as typed profiles a new scenario's files are drafted from."""
