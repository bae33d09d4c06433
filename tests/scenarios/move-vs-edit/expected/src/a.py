print('a.py, edited on ws1')
