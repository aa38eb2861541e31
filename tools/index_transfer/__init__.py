"""Export and import of one method's index as a .npz file, so a catalogue embedded once can move.

    python -m tools.index_transfer export METHOD FILE [--version V]
    python -m tools.index_transfer import FILE

The file (NumPy's .npz: a zip of .npy arrays, read without pickle) holds one model version's
vectors, the catalogue entries they were made from (canonical JPEG, thumbnail, metadata) and,
for the autoencoder, the model file that embeds queries: a vector is useless without it.
README.md ("Moving an index") has the table of arrays.

An import validates the whole file before it stores anything, never overwrites a catalogue
entry, and stores vectors through IndexStore.add_vectors (the Lua script that checks each
vector's picture is the one in the catalogue and logs the add), so running workers pick them
up from the change log like any other add. Importing a file twice changes nothing the second
time. It runs where the workers run (numpy); the gateway never imports it.

``file_format`` is the file (arrays, validation), ``transfer`` its export from and import
into Redis, ``__main__`` the command line.
"""
