print('a.py, original')
