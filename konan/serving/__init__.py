"""The data plane: model servers, one per deployment replica.

No database and no control-plane imports: a server gets its model artifacts and signature,
validates each request, calls the model (``konan.serving.flavors`` loads every flavor behind
one ``LoadedModel`` surface) and logs every prediction through the log producer. Run it with
``python -m konan.serving --spec PATH``; see README.md for the endpoints and invariants.
"""
