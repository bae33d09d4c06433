print('b.py, untouched')
